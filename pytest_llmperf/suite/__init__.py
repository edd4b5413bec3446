"""What a suite is made of: grids, workloads, accuracy tasks, arrivals and SLOs, scaling."""
