"""Make a classic MLflow data set the way the classic setup does: the MLflow client writing
straight into a store on the server's disk (argv[1]: a file store `file:///app/mlruns`, or
`sqlite:////app/mlflow.db` with artifacts in /app/mlruns), with local artifacts. Run on the
target inside the MLflow image. argv[2]: the registered model's name; argv[3]: bytes of one
large extra artifact (0: none).

Two experiments, runs with metric histories, a scikit-learn model in two versions (an alias
and a stage), a deleted run. Prints what it made as JSON.
"""

import json
import os
import sys

import mlflow
import numpy as np
from mlflow import MlflowClient
from sklearn.linear_model import LinearRegression

uri, model_name, large = sys.argv[1], sys.argv[2], int(sys.argv[3])
mlflow.set_tracking_uri(uri)
mlflow.set_registry_uri(uri)
client = MlflowClient()
X = np.arange(20, dtype=float).reshape(-1, 1)
made = {"runs": {}, "deleted": [], "model_runs": []}

mlflow.set_experiment("classic-training")
client.set_experiment_tag(mlflow.get_experiment_by_name("classic-training").experiment_id, "team", "vision")
for slope in (2.0, 3.0, 4.0):
    with mlflow.start_run(run_name=f"slope-{slope}") as run:
        mlflow.log_param("slope", slope)
        mlflow.set_tag("kind", "regression")
        for step in range(6):
            mlflow.log_metric("loss", slope / (step + 1), step=step)
        mlflow.log_text(f"slope {slope}\n", "notes/summary.txt")
        if slope != 2.0:
            model = LinearRegression().fit(X, slope * X[:, 0] + 1.0)
            mlflow.sklearn.log_model(model, name="model", registered_model_name=model_name)
            made["model_runs"].append(run.info.run_id)
        if large and slope == 4.0:
            with open("/tmp/large.bin", "wb") as handle:
                handle.write(os.urandom(large))
            mlflow.log_artifact("/tmp/large.bin", "data")
    made["runs"][run.info.run_id] = "classic-training"
client.set_registered_model_alias(model_name, "champion", "2")
client.transition_model_version_stage(model_name, "1", "Archived")

mlflow.set_experiment("classic-tuning")
for lr in (0.1, 0.01):
    with mlflow.start_run() as run:
        mlflow.log_params({"lr": lr, "epochs": 3})
        mlflow.log_metrics({"acc": 0.5, "val_acc": 0.4}, step=0)
        mlflow.log_metric("acc", 0.9, step=1)
    made["runs"][run.info.run_id] = "classic-tuning"
with mlflow.start_run(run_name="abandoned") as run:
    mlflow.log_metric("acc", 0.1)
client.delete_run(run.info.run_id)
made["runs"][run.info.run_id] = "classic-tuning"
made["deleted"].append(run.info.run_id)

made["metrics"] = {run_id: {key: [[m.step, m.timestamp, m.value] for m in client.get_metric_history(run_id, key)]
                            for key in client.get_run(run_id).data.metrics}
                   for run_id in made["runs"]}
made["times"] = {run_id: [client.get_run(run_id).info.start_time, client.get_run(run_id).info.end_time]
                 for run_id in made["runs"]}
print("RESULT=" + json.dumps(made))
