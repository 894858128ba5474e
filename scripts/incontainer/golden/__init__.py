"""The golden probe: its inputs and comparisons, the check before predictions, the drift probe."""
