"""The deciding side of Conveyor: the pure core in ``engine.state`` and its shell."""
