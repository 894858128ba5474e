"""The pipeline steps the host runs in containers: make_data, train, freeze, infer, adopt, reexport."""
