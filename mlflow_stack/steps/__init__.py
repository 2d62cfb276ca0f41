"""What deploy.py calls, in its order: one module per concern, each @deploy runnable alone."""
