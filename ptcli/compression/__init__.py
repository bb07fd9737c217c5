"""Model compression: measuring a model (parameters, file size, CPU latency), pruning and quantizing it."""
