"""Publishing the zoo: DVC model artifacts and pushing the pipeline's outputs to a DVC remote."""
