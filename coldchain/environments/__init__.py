"""Environments: hashed locks (locks, resolver), the verified wheelhouse, base images, deterministic
build contexts, and the images built only from them (images, opbuild)."""
