"""The servers to provision. Edit these lists; settings go in group_data/ (every setting and its
default: docs/configuration.md) or per host as a dict, e.g. {"mlflow_port": 8080}.

Connect as root, or as a sudo user with "_sudo": True.

Each host of `mlflow_servers` is a whole MLflow server of its own (MLflow, PostgreSQL, MinIO);
pyinfra provisions several in parallel.

A cluster (docs/cluster.md) uses three more groups instead, each host in one:
  mlflow_data_hosts        at most one: runs PostgreSQL and MinIO for the tracking servers,
                           published to the cluster's members only (a firewall in Docker's chain)
  mlflow_tracking_servers  one or more: MLflow only, against the data host (or, without a data
                           host, the external backends of postgres_external_host/s3_endpoint_url);
                           the first migrates the schema and keeps the users for all
  mlflow_balancers         one: clients' address; spreads them over the healthy tracking servers
                           and fronts the data host's S3 API for presigned URLs
The cluster's passwords must be given (the same on every member): postgres_password,
minio_root_password, mlflow_auth_admin_password, mlflow_flask_server_secret_key, e.g. as
$MLFLOW_STACK_<NAME> in pyinfra's environment. TLS in a cluster: tls = "files" with the lab's
certificate for the balancer's name (the balancer terminates it; docs/cluster.md), or "off".
Members reach each other by `cluster_address`, else their SSH host name or inventory name.
"""

mlflow_servers = [
    ("mlflow.lab.example.org", {"ssh_user": "admin", "_sudo": True}),
]

# A cluster, for example:
# mlflow_data_hosts = [("mlflow-data.lab.example.org", {"ssh_user": "admin", "_sudo": True})]
# mlflow_tracking_servers = [("mlflow-1.lab.example.org", {...}), ("mlflow-2.lab.example.org", {...})]
# mlflow_balancers = [("mlflow.lab.example.org", {...})]
