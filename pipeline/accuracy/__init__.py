"""Ground-truth accuracy: dataset keypoint schemas, model → dataset keypoint maps, and the metrics
(COCO keypoint AP / OKS, NME, PCK, EPE) that score predictions against annotated datasets."""
