"""The servers to provision. Edit this list; settings go in group_data/ (every setting and its
default: README.md's settings table) or per host as a dict, e.g. {"mlflow_port": 8080}.

Connect as root, or as a sudo user with "_sudo": True.
"""

mlflow_servers = [
    ("mlflow.lab.example.org", {"ssh_user": "admin", "_sudo": True}),
]
