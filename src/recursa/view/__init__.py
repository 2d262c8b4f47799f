"""`recursa view`: a local web viewer for runs (trace trees, answers, Aime boards) and `recursa bench` folders."""
