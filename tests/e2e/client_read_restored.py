"""A remote MLflow client against a restored server: lists the runs of the e2e-backup
experiment, reads their metric histories, and loads the model both by `models:/NAME/1` and by
`runs:/RUN/model`. Prints what it found as JSON."""

import json
import sys

import mlflow
import numpy as np
from mlflow import MlflowClient

name, model_run = sys.argv[1], sys.argv[2]
client = MlflowClient()
experiment = client.get_experiment_by_name("e2e-backup")
runs = client.search_runs([experiment.experiment_id])
history = {run.info.run_id: [m.value for m in client.get_metric_history(run.info.run_id, "loss")] for run in runs}
by_name = mlflow.pyfunc.load_model(f"models:/{name}/1")
by_run = mlflow.pyfunc.load_model(f"runs:/{model_run}/model")
x = np.array([[10.0]])
print("RESULT=" + json.dumps({
    "runs": sorted(history),
    "params": {run.info.run_id: run.data.params for run in runs},
    "loss": history,
    "predict_by_name": float(by_name.predict(x)[0]),
    "predict_by_run": float(by_run.predict(x)[0]),
}))
