"""Test-target harness: disposable Debian 13 servers (systemd-nspawn containers and qemu VMs)."""
