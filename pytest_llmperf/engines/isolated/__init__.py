"""Running an in-process engine in a child process: the parent proxy and the child."""
