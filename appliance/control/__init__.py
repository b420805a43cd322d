"""Running the box as a managed service: systemd notifications (``sdnotify``), fleet control over MQTT
(``mqtt``), metrics and health (``metrics``). Each module is imported on its own; none is imported here."""
