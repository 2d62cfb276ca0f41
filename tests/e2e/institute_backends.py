"""The "institute's" PostgreSQL and S3 for tests/e2e/test_external.py: run on their own target
from the stand-in images (a managed database and an S3 store a lab would be given), published
on the target's address so another server's stack can use them as external backends.

    pyinfra INVENTORY tests/e2e/institute_backends.py
    (host data: institute_db_password, institute_s3_secret, institute_db_tls_dir: server.crt/.key)
"""

from io import StringIO

from pyinfra import host
from pyinfra.operations import files, server

from mlflow_stack.config import config_from_host
from mlflow_stack.steps.docker_engine import install_docker
from mlflow_stack.steps.stack import load_image_archives
from tools.standins.build import STANDIN_IMAGES

config = config_from_host()
install_docker(config)
load_image_archives(config)

files.directory(name="Ensure /srv/institute exists", path="/srv/institute", user="root", group="root", mode="700")
files.put(name="Write the database's env file", dest="/srv/institute/postgres.env", mode="600",
          src=StringIO(f"POSTGRES_USER=institute\nPOSTGRES_DB=mlflow_lab\n"
                       f"POSTGRES_PASSWORD={host.data.institute_db_password}\n"))
files.put(name="Write the S3 store's env file", dest="/srv/institute/s3.env", mode="600",
          src=StringIO(f"MINIO_ROOT_USER=labkey\nMINIO_ROOT_PASSWORD={host.data.institute_s3_secret}\n"))
# TLS: the server certificate and key made by the test (uid 999: the image's postgres user).
tls_dir = host.data.institute_db_tls_dir
for name in ("server.crt", "server.key"):
    files.put(name=f"Upload the database's {name}", src=f"{tls_dir}/{name}", dest=f"/srv/institute/tls/{name}",
              mode="600", create_remote_dir=True)
server.shell(name="Hand the TLS files to the database's user", commands=["chown -R 999:999 /srv/institute/tls"])
server.shell(name="Run the institute's PostgreSQL (5432) and S3 store (9000)", commands=[
    "docker rm -f institute-postgres institute-s3 >/dev/null 2>&1 || true",
    f"docker run -d --name institute-postgres --env-file /srv/institute/postgres.env -p 5432:5432 "
    f"-v /srv/institute/tls:/tls:ro {STANDIN_IMAGES['postgres']} "
    "-c ssl=on -c ssl_cert_file=/tls/server.crt -c ssl_key_file=/tls/server.key",
    f"docker run -d --name institute-s3 --env-file /srv/institute/s3.env -p 9000:9000 {STANDIN_IMAGES['minio']} "
    "server /data --address :9000",
    "for i in $(seq 60); do docker exec institute-postgres pg_isready -q -h 127.0.0.1 && exit 0; sleep 1; done; exit 1",
])
