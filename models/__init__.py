"""malsensor-train: datasets, the model zoo, training loops, artifact publishing and reports."""
