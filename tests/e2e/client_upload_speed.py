"""Upload one big file from this (remote) machine, in two interleaved rounds, and print the
best speed of each way:
through MLflow (MLFLOW_TRACKING_URI and the user's credentials: the client asks the server, which hands out
presigned multipart URLs for big files) and straight to the object store with boto3 and the
root credentials (S3_ENDPOINT_URL, AWS_* in the environment). Prints
RESULT=<mlflow MiB/s> <boto3 MiB/s>.

    python client_upload_speed.py FILE
"""

import os
import sys
import time

import boto3
import mlflow

path = sys.argv[1]
mib = os.path.getsize(path) / 2**20

mlflow.set_experiment("e2e-upload-speed")
s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"], region_name="us-east-1")
key = f"speed-test/{os.path.basename(path)}"


def through_mlflow() -> float:
    with mlflow.start_run():
        started = time.monotonic()
        mlflow.log_artifact(path)
        return mib / (time.monotonic() - started)


def direct() -> float:
    started = time.monotonic()
    s3.upload_file(path, os.environ["S3_BUCKET"], key)
    speed = mib / (time.monotonic() - started)
    s3.delete_object(Bucket=os.environ["S3_BUCKET"], Key=key)
    return speed


# Two interleaved rounds, the best of each: on a shared 2-core machine one round can land on
# a burst of other work.
rounds = [(through_mlflow(), direct()) for _ in range(2)]
print(f"RESULT={max(r[0] for r in rounds):.1f} {max(r[1] for r in rounds):.1f}")
