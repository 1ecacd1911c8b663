"""Ray orchestration: how convert / stats fan out over workers and a cluster. The only package that imports Ray."""
