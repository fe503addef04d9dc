"""The streaming updater: a Faust worker that keeps lagged windows and emits LTE updates."""
