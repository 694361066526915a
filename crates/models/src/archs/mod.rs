//! The four architecture families of the seed documents, one file each, configurations as data
//! and names as in timm.

pub mod mobilenetv2;
pub mod mobilenetv3;
pub mod resnet;
pub mod vit;
