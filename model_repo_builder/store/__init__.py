"""The model store: build keys, build.json records, atomic publish, verify and garbage collection."""
