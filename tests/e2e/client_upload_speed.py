"""Upload one big file twice from this (remote) machine and print both speeds:
through MLflow (only MLFLOW_TRACKING_URI set: the client asks the server, which hands out
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
with mlflow.start_run():
    started = time.monotonic()
    mlflow.log_artifact(path)
    through_mlflow = mib / (time.monotonic() - started)

s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"], region_name="us-east-1")
started = time.monotonic()
s3.upload_file(path, os.environ["S3_BUCKET"], f"speed-test/{os.path.basename(path)}")
direct = mib / (time.monotonic() - started)
s3.delete_object(Bucket=os.environ["S3_BUCKET"], Key=f"speed-test/{os.path.basename(path)}")
print(f"RESULT={through_mlflow:.1f} {direct:.1f}")
