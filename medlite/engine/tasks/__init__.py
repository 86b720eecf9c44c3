"""What each kind of training supplies to the one loop (:mod:`medlite.engine.loop`): data, model, the batch ->
loss step, the validation metric and the final report. One module (or package) per task."""
