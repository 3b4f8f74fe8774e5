"""The client API: KV and Cluster services, and forwarding to the leader."""
