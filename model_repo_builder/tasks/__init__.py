"""The build paths by task: how a tensor model and each text task is built."""
