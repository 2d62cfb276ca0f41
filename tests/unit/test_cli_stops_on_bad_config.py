"""The real CLI stops on a bad setting before any operation or fact reaches a host."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))


def test_bad_settings_stop_the_run_before_any_operation():
    # @local and --dry: even if validation let this through, nothing would be changed here.
    proc = subprocess.run(
        [PYINFRA, "--dry", "@local", "deploy.py", "--data", "mlflow_port=70000", "--data", "minio_bucket=Bad_Bucket"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "mlflow_port = 70000: must be an integer from 1 to 65535" in output
    assert "minio_bucket = 'Bad_Bucket': must be an S3 bucket name" in output
    assert "Traceback" not in output
    assert "Starting operation" not in output and "Loaded fact" not in output
