"""The doing side of Conveyor: the worker loop and the step executors. Stateless."""
