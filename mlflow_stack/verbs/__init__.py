"""What the other entry points call: backup.py, restore.py, import_classic.py, status.py, logs.py
and uninstall.py at the top of the repository."""
