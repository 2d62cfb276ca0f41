"""The targets' SSH key is made once, whoever asks for it first: `make test` starts its lanes
and its builds at the same moment, and each asks for the key."""

from __future__ import annotations

import subprocess
import sys

ASK = "from tools.harness.rootfs import ssh_keypair; key = ssh_keypair(); print(key.with_suffix('.pub').read_text().strip())"

def test_processes_asking_at_once_all_get_one_matching_key_pair(tmp_path):
    env = {"MLFLOW_STACK_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
    askers = [subprocess.Popen([sys.executable, "-c", ASK], env=env, stdout=subprocess.PIPE, text=True)
              for _ in range(8)]
    answers = {asker.communicate(timeout=60)[0].strip() for asker in askers}
    assert all(asker.returncode == 0 for asker in askers)
    assert len(answers) == 1, answers
    key = tmp_path / "ssh" / "id_ed25519"
    public_of_private = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True,
                                       check=True).stdout.split()[:2]
    assert public_of_private == answers.pop().split()[:2]
    assert oct(key.stat().st_mode & 0o777) == "0o600"
