"""A remote MLflow client: only MLFLOW_TRACKING_URI is set. Logs params, metrics and a
scikit-learn model, then prints the run id. Run by the e2e tests in a separate process."""

import mlflow
import numpy as np
from sklearn.linear_model import LinearRegression

X = np.arange(20, dtype=float).reshape(-1, 1)
y = 3.0 * X[:, 0] + 1.0

mlflow.set_experiment("e2e-remote-client")
with mlflow.start_run() as run:
    mlflow.log_param("alpha", 0.5)
    for step in range(3):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
    model = LinearRegression().fit(X, y)
    mlflow.sklearn.log_model(model, name="model", input_example=X[:2])
run_id = run.info.run_id
print(f"RESULT={run_id}")
