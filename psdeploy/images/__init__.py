"""Users' own images: where they are (layouts), how each is decoded, the model's preprocessing, and a worker
pool that feeds them to inference."""
