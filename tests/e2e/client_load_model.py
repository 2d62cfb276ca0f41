"""A second remote client process: loads the model by its run URI and predicts."""

import sys

import mlflow
import numpy as np

model = mlflow.pyfunc.load_model(f"runs:/{sys.argv[1]}/model")
print(f"RESULT={float(model.predict(np.array([[10.0]]))[0])}")
