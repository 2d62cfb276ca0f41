"""Create the artifact bucket if it is missing. Run once by compose before MLflow starts.

Credentials and endpoint come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
S3_ENDPOINT_URL, ARTIFACT_BUCKET). Any other error fails the container, and so the deploy.
"""

import os
import sys

import boto3
from botocore.exceptions import ClientError

bucket = os.environ["ARTIFACT_BUCKET"]
s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"], region_name="us-east-1")
try:
    s3.head_bucket(Bucket=bucket)
    print(f"bucket {bucket} exists")
except ClientError as error:
    if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
        print(f"cannot check bucket {bucket}: {error}", file=sys.stderr)
        sys.exit(1)
    s3.create_bucket(Bucket=bucket)
    print(f"bucket {bucket} created")
