"""malsensord: the long-running sensor (configuration, model registry with hot
reload, batched inference, outputs, statistics and the systemd glue)."""
