"""A remote MLflow client (only MLFLOW_TRACKING_URI): two runs with params and a metric
history, one with a scikit-learn model registered as argv[1]. Prints the run ids as JSON."""

import json
import sys

import mlflow
import numpy as np
from sklearn.linear_model import LinearRegression

X = np.arange(20, dtype=float).reshape(-1, 1)
y = 3.0 * X[:, 0] + 1.0

mlflow.set_experiment("e2e-backup")
run_ids = []
for alpha in (0.1, 0.2):
    with mlflow.start_run() as run:
        mlflow.log_param("alpha", alpha)
        for step in range(5):
            mlflow.log_metric("loss", alpha / (step + 1), step=step)
        if alpha == 0.2:
            mlflow.sklearn.log_model(LinearRegression().fit(X, y), name="model", input_example=X[:2],
                                     registered_model_name=sys.argv[1])
        run_ids.append(run.info.run_id)
print("RESULT=" + json.dumps({"runs": run_ids, "model_run": run_ids[-1]}))
