"""Datasets, tasks and label formats."""

from .datasets import (
    DATASETS,
    TASKS,
    Sample,
    TaskInfo,
    dataset_dir,
    dataset_summary,
    get_task,
    load_300w_xml,
    load_split,
    resolve_data_root,
)
from .formats import parse_300w_xml, parse_asf, read_pts

__all__ = [
    "DATASETS", "TASKS", "Sample", "TaskInfo", "dataset_dir", "dataset_summary", "get_task",
    "load_300w_xml", "load_split", "resolve_data_root", "parse_300w_xml", "parse_asf", "read_pts",
]
