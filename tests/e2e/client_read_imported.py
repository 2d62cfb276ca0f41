"""A remote MLflow client (tracking URI and credentials only) after an import: finds every
imported run by its source id, reads its metric histories, times and lifecycle, the
experiments' and runs' artifact locations, the registry, and loads the model by alias and by
run. argv[1]: the registered model's name; argv[2]: the source run of version 2. Prints JSON."""

import json
import sys

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import ViewType

name, model_run = sys.argv[1], sys.argv[2]
client = MlflowClient()
experiments = client.search_experiments(view_type=ViewType.ALL)
runs = {}
for experiment in experiments:
    for run in client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=1000):
        source = run.data.tags.get("mlflow_stack.imported_from")
        if source is None:
            continue
        runs[source] = {
            "id": run.info.run_id,
            "experiment": experiment.name,
            "lifecycle": run.info.lifecycle_stage,
            "status": run.info.status,
            "times": [run.info.start_time, run.info.end_time],
            "artifact_uri": run.info.artifact_uri,
            "params": run.data.params,
            "metrics": {key: [[m.step, m.timestamp, m.value] for m in client.get_metric_history(run.info.run_id, key)]
                        for key in run.data.metrics},
            "artifacts": sorted(f.path for f in client.list_artifacts(run.info.run_id)),
        }
model = client.get_registered_model(name)
versions = {v.version: {"stage": v.current_stage, "source": v.source, "run_id": v.run_id}
            for v in client.search_model_versions(f"name = '{name}'")}
x = np.array([[10.0]])
by_alias = mlflow.pyfunc.load_model(f"models:/{name}@champion")
by_run = mlflow.pyfunc.load_model(f"runs:/{runs[model_run]['id']}/model")
notes = client.download_artifacts(runs[model_run]["id"], "notes/summary.txt")
print("RESULT=" + json.dumps({
    "runs": runs,
    "experiments": {e.name: {"location": e.artifact_location, "lifecycle": e.lifecycle_stage, "tags": e.tags}
                    for e in experiments},
    "aliases": model.aliases,
    "versions": versions,
    "predict_by_alias": float(by_alias.predict(x)[0]),
    "predict_by_run": float(by_run.predict(x)[0]),
    "notes": open(notes).read(),
}))
