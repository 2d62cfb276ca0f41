"""A remote MLflow client (only MLFLOW_TRACKING_URI and credentials): two runs with an artifact
each, both deleted (they go to the trash, their artifacts stay). Prints the experiment and run
ids as JSON."""

import json

import mlflow
from mlflow import MlflowClient

experiment = mlflow.set_experiment("e2e-gc")
run_ids = []
for name in ("deleted-long-ago", "deleted-just-now"):
    with mlflow.start_run(run_name=name) as run:
        mlflow.log_text(f"artifact of {name}\n", "notes/readme.txt")
        run_ids.append(run.info.run_id)
client = MlflowClient()
for run_id in run_ids:
    client.delete_run(run_id)
print("RESULT=" + json.dumps({"experiment": experiment.experiment_id, "runs": run_ids}))
