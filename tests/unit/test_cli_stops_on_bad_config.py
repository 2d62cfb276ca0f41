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


def test_rotation_and_public_host_errors_from_data_stop_the_run():
    # `--data rotate_secrets=a,b` reaches the deploy as the string "a,b": both names are read.
    given = "Minio-Given.Secret_0123"
    proc = subprocess.run(
        [PYINFRA, "--dry", "@local", "deploy.py", "--data", "rotate_secrets=postgres_password,minio_root_password",
         "--data", f"minio_root_password={given}", "--data", "mlflow_public_host=minio"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "rotate_secrets names 'minio_root_password', which is given (in the config or" in output
    assert "rotate_secrets names 'postgres_password'" not in output  # generated: may be rotated
    assert "mlflow_public_host = 'minio' (or the inventory name): clients on other machines cannot use it, and on the compose network it names a container" in output
    assert given not in output
    assert "Traceback" not in output
    assert "Starting operation" not in output and "Loaded fact" not in output


def test_group_data_overrides_a_default_and_a_misspelt_key_there_is_refused(tmp_path):
    # --group-data adds a folder after ./group_data: its all.py overrides the repository's.
    (tmp_path / "all.py").write_text("mlflow_port = 70000\nminio_bukcet = 'artifacts'\n")
    proc = subprocess.run(
        [PYINFRA, "--dry", "@local", "deploy.py", "--group-data", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "mlflow_port = 70000: must be an integer from 1 to 65535" in output
    assert "minio_bukcet: unknown setting; did you mean 'minio_bucket'?" in output
    assert "Starting operation" not in output and "Loaded fact" not in output
