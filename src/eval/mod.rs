//! COCO evaluation (pycocotools-identical through hotcoco), metric exports and plots.
