//! Recommended training configurations ("recipes") per architecture family and data set: what
//! `tessera train` uses when the command line gives no `--opt`, `--lr`, `--epochs`...
//!
//! | family | optimizer | peak lr | weight decay | warm-up | epochs (digits / cifar10) |
//! |---|---|---|---|---|---|
//! | ViT | AdamW | 2e-3 | 0.05 | 2 | 60 / 50 |
//! | ResNet, SE-ResNet | AdamW | 2e-3 | 0.05 | 2 | 20 / 50 |
//! | MobileNetV2, MobileNetV3 | SGD, Nesterov momentum 0.9 | 0.02 | 5e-4 | 2 | 20 / 50 |
//!
//! All with batch 64 and a cosine schedule to 1e-5 after a linear warm-up (Loshchilov &
//! Hutter, SGDR, 2017; Goyal et al., 2017); weight decay never applies to norms, biases or
//! ViT's `pos_embed` / `cls_token` (timm's groups). AdamW is Loshchilov & Hutter, 2019.
//!
//! Why the MobileNets train with SGD: with the AdamW recipe, `mobilenetv2_digits` reaches 99.5%
//! training accuracy but only 80% test accuracy after 60 epochs (it memorises the 1437 training
//! images), while SGD with L2 weight decay 5e-4 reaches 96.7% in 20 epochs. Batch norm after
//! every convolution makes the loss independent of the scale of the convolution weights, so L2
//! decay under SGD acts by raising the effective learning rate, which regularises (van
//! Laarhoven, 2017; Zhang et al., "Three Mechanisms of Weight Decay Regularization", ICLR
//! 2019); AdamW's decoupled decay (a factor `1 - lr * 0.05` per step) is a much weaker push.
//! Their peak lr is 0.02, not SGD's usual 0.05: at 0.05 the `mobilenetv2_digits` loss spikes
//! twice (epochs 5 and 10) and the run ends at 94.2%. (timm initialises the MobileNet
//! classifier uniformly in +-1/sqrt(num_classes), wide for 10 classes: the untrained loss is
//! about 8, not ln 10.) The ResNet presets, with one zero-initialised residual bottleneck per
//! stage, learn faster with AdamW (`seresnet_digits`: 92% after 5 epochs and 97.2% after 15,
//! against 69% and 94.2% with SGD at lr 0.05), so they keep it. The measured runs are in
//! `docs/training.md`.
//!
//! Digits train without augmentation (on 8x8 images a one-pixel shift moves a stroke by an
//! eighth of the image: measured 86% against 96% for `vit_digits`, and it slowed
//! `seresnet_digits` under SGD to 25% after 5 epochs); CIFAR-10 trains with a random crop after
//! 4 pixels of zero padding and horizontal flips; image-folder data sets train with timm's
//! random resized crop (scale 0.08 to 1, ratio 3/4 to 4/3) and horizontal flips (except the
//! 8x8 `*_digits` presets, which get none, as on the digits).
//!
//! Fine-tuning from pretrained weights ([`finetune_recipe`]) keeps the family's optimizer with a
//! tenth of its peak learning rate (AdamW 2e-4, SGD 2e-3), 10 epochs, batch 32, one warm-up
//! epoch, and the image-folder augmentation. These are conventional starting points (timm's
//! fine-tuning examples use lr 1e-4 to 1e-3 for AdamW), not values tuned on a benchmark here.

use crate::data::{Augment, ResizedCrop};
use crate::train::{OptKind, TrainConfig};

/// The family of an architecture name, as far as training recipes care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Vision transformers (`vit_*`).
    Transformer,
    /// ResNet and SE-ResNet (`resnet*`, `seresnet*`).
    ResNet,
    /// MobileNetV2 and MobileNetV3 (`mobilenetv*`), and any other architecture.
    MobileNet,
}

impl Family {
    /// The family of a zoo name, by its prefix.
    pub fn of(arch: &str) -> Family {
        if arch.starts_with("vit_") {
            Family::Transformer
        } else if arch.starts_with("resnet") || arch.starts_with("seresnet") {
            Family::ResNet
        } else {
            Family::MobileNet
        }
    }

    /// The optimizer of the family's recipe.
    pub fn optimizer(self) -> OptKind {
        match self {
            Family::Transformer | Family::ResNet => OptKind::AdamW,
            Family::MobileNet => OptKind::Sgd,
        }
    }
}

/// The default peak learning rate and weight decay of an optimizer:
/// AdamW 2e-3 / 0.05, SGD 0.05 / 5e-4.
pub fn optimizer_defaults(opt: OptKind) -> (f32, f32) {
    match opt {
        OptKind::AdamW => (2e-3, 0.05),
        OptKind::Sgd => (0.05, 5e-4),
    }
}

/// The recommended configuration for training `arch` from scratch on `dataset` (`digits` or
/// `cifar10`; any other name gets the digits schedule without augmentation), as in the table
/// of the module docs. Seed 0, batch 64, no label smoothing, no clipping.
pub fn recipe(arch: &str, dataset: &str) -> TrainConfig {
    let family = Family::of(arch);
    let opt = family.optimizer();
    let (lr, weight_decay) = match family {
        // Lower than SGD's default 0.05, at which mobilenetv2_digits is unstable.
        Family::MobileNet => (0.02, 5e-4),
        _ => optimizer_defaults(opt),
    };
    let cifar = dataset == "cifar10";
    let folder = dataset.starts_with("folder");
    let epochs = match (family, cifar) {
        (_, true) => 50,
        (Family::Transformer, false) => 60,
        (_, false) => 20,
    };
    TrainConfig {
        epochs,
        batch: 64,
        lr,
        opt,
        weight_decay,
        momentum: 0.9,
        warmup_epochs: 2,
        augment: if cifar {
            Some(Augment {
                crop_padding: 4,
                hflip: true,
                resized_crop: None,
            })
        } else if folder {
            folder_augment(arch)
        } else {
            None
        },
        ..TrainConfig::default()
    }
}

/// The augmentation of image-folder training: timm's random resized crop and horizontal flip,
/// none for the 8x8 `*_digits` presets.
pub fn folder_augment(arch: &str) -> Option<Augment> {
    (!arch.ends_with("_digits")).then_some(Augment {
        crop_padding: 0,
        hflip: true,
        resized_crop: Some(ResizedCrop::default()),
    })
}

/// The recommended configuration for fine-tuning `arch` from pretrained weights on an
/// image-folder data set (see the module docs): the family's optimizer at a tenth of its peak
/// lr, 10 epochs, batch 32, one warm-up epoch, [`folder_augment`].
pub fn finetune_recipe(arch: &str) -> TrainConfig {
    let base = recipe(arch, "folder");
    TrainConfig {
        epochs: 10,
        batch: 32,
        lr: base.lr / 10.0,
        warmup_epochs: 1,
        ..base
    }
}
