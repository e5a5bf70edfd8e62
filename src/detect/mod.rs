//! Detection-specific work: label assignment (SimOTA), losses, decoding and NMS.

pub mod loss;
pub mod simota;
