"""The one layer between coldchain and a container engine: the Engine interface (engine.py) and its
Docker SDK implementation (docker.py). Everything else talks to an Engine; unit tests use a fake."""

from .engine import ContainerInfo, DiskSpace, Engine, ImageInfo, LogSink, Mount, RunResult, RunSpec

__all__ = ["ContainerInfo", "DiskSpace", "Engine", "ImageInfo", "LogSink", "Mount", "RunResult", "RunSpec"]
