//! Fine-tuning support in the library: weights-only saving (exactly the model's `state_dict`
//! keys, no optimizer state), loading pretrained weights with a re-initialised classifier, the
//! image-folder data set (scan, stratified hold-out, decoding, errors) and the random resized
//! crop.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use tessera::core::Rng;
use tessera::models::data::{digits_split, image_folder_splits, Augment, ImageFolder, ResizedCrop};
use tessera::models::finetune::{classifier_names, load_pretrained, save_weights};
use tessera::models::io::safetensors;
use tessera::models::module::named_tensors;
use tessera::models::recipes::recipe;
use tessera::models::train::{TrainConfig, Trainer};
use tessera::models::zoo::{create, Overrides};

fn tmpdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-ft-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn keys(path: &Path) -> BTreeSet<String> {
    safetensors::read(path)
        .unwrap()
        .tensors
        .into_keys()
        .collect()
}

#[test]
fn save_writes_exactly_the_state_dict_keys_and_the_checkpoint_keeps_the_optimizer() {
    let dir = tmpdir("save");
    let (train, test) = digits_split().unwrap();
    let train = train.subset(&(0..64).collect::<Vec<_>>());
    let mut model = create("resnet_digits", &Overrides::default(), 0).unwrap();
    let cfg = TrainConfig {
        epochs: 1,
        ..recipe("resnet_digits", "digits")
    };
    let mut t = Trainer::new(cfg, model.as_mut(), train.len()).unwrap();
    t.run_epoch(
        model.as_mut(),
        &train,
        &test.subset(&[0, 1, 2]),
        &mut |_| {},
    )
    .unwrap();
    let w = dir.join("w.safetensors");
    save_weights(model.as_ref(), &w).unwrap();
    let state_dict: BTreeSet<String> = named_tensors(model.as_ref())
        .into_iter()
        .map(|(n, _, _)| n)
        .collect();
    assert_eq!(keys(&w), state_dict);
    assert!(keys(&w).iter().all(|k| !k.starts_with("__optim__")));
    let file = safetensors::read(&w).unwrap();
    assert_eq!(file.metadata.get("format").map(String::as_str), Some("pt"));
    assert_eq!(
        file.metadata.get("tessera.arch").map(String::as_str),
        Some("resnet_digits")
    );
    // The checkpoint has the same model keys plus the AdamW moments.
    let ck = dir.join("ck.safetensors");
    t.save_checkpoint(model.as_ref(), &ck).unwrap();
    let ck_keys = keys(&ck);
    assert!(ck_keys.is_superset(&state_dict));
    assert!(ck_keys.iter().any(|k| k.starts_with("__optim__")));
    // The weights load back bit for bit.
    let mut again = create("resnet_digits", &Overrides::default(), 9).unwrap();
    let r = load_pretrained(again.as_mut(), &w).unwrap();
    assert!(r.reinitialised.is_empty());
    assert_eq!(r.file_classes, Some(10));
    for ((n, a, _), (_, b, _)) in named_tensors(model.as_ref())
        .into_iter()
        .zip(named_tensors(again.as_ref()))
    {
        assert_eq!(a.to_vec(), b.to_vec(), "{n}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_classifier_is_the_last_linear_layer_of_every_family() {
    for (arch, head) in [
        ("vit_digits", "head."),
        ("mobilenetv2_digits", "classifier."),
        ("mobilenetv3_digits", "classifier."),
        ("resnet_digits", "fc."),
        ("seresnet_digits", "fc."),
    ] {
        let m = create(arch, &Overrides::default(), 0).unwrap();
        let names = classifier_names(m.as_ref());
        assert_eq!(
            names,
            vec![format!("{head}weight"), format!("{head}bias")],
            "{arch}"
        );
    }
}

#[test]
fn pretrained_weights_with_another_class_count_keep_a_fresh_classifier() {
    let dir = tmpdir("reinit");
    let ten = create("vit_digits", &Overrides::default(), 1).unwrap();
    let w = dir.join("ten.safetensors");
    save_weights(ten.as_ref(), &w).unwrap();
    let three = Overrides {
        num_classes: Some(3),
        ..Overrides::default()
    };
    let mut m = create("vit_digits", &three, 2).unwrap();
    let fresh_head: Vec<f32> = named_tensors(m.as_ref())
        .into_iter()
        .find(|(n, _, _)| n == "head.weight")
        .unwrap()
        .1
        .to_vec();
    let r = load_pretrained(m.as_mut(), &w).unwrap();
    assert_eq!(
        r.reinitialised,
        vec!["head.bias", "head.weight"],
        "sorted by name"
    );
    assert_eq!(r.file_classes, Some(10));
    let after = named_tensors(m.as_ref());
    let src = named_tensors(ten.as_ref());
    for ((n, a, _), (_, b, _)) in after.iter().zip(&src) {
        if n.starts_with("head.") {
            continue;
        }
        assert_eq!(a.to_vec(), b.to_vec(), "{n} comes from the file");
    }
    let head = after.iter().find(|(n, _, _)| n == "head.weight").unwrap();
    assert_eq!(head.1.shape(), &[3, 64]);
    assert_eq!(
        head.1.to_vec(),
        fresh_head,
        "the classifier keeps its initialisation"
    );
    // A file for another architecture is still an error naming the problem.
    let mut other = create("resnet_digits", &three, 0).unwrap();
    let e = load_pretrained(other.as_mut(), &w).unwrap_err().to_string();
    assert!(
        e.contains("missing tensor") && e.contains("ten.safetensors"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A folder data set whose "images" are text files holding one number each (the decoder
/// below reads them), so the scan, split and load logic is tested without an image codec.
fn fake_folder(root: &Path, classes: &[(&str, usize)]) {
    for (c, n) in classes {
        let d = root.join(c);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..*n {
            std::fs::write(d.join(format!("{i:03}.png")), format!("{i}")).unwrap();
        }
        std::fs::write(d.join("notes.txt"), "not an image").unwrap();
    }
}

fn decode_number(p: &Path) -> Result<Vec<f32>, String> {
    let s = std::fs::read_to_string(p).map_err(|e| e.to_string())?;
    let v: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("not a number: {s:?}"))?;
    Ok(vec![v; 4])
}

#[test]
fn image_folders_scan_split_and_load() {
    let root = tmpdir("folder");
    fake_folder(&root, &[("cat", 10), ("dog", 5), ("emu", 1)]);
    std::fs::create_dir_all(root.join(".hidden")).unwrap();
    let f = ImageFolder::scan(&root).unwrap();
    assert_eq!(f.classes, ["cat", "dog", "emu"]);
    assert_eq!(f.len(), 16, "text files and hidden folders are skipped");
    let (train, held) = f.split(0.2, 7).unwrap();
    // Per class: round(10 * 0.2) = 2, round(5 * 0.2) = 1, and a single image stays in train.
    let count = |g: &ImageFolder, l: usize| g.files.iter().filter(|(_, x)| *x == l).count();
    assert_eq!(
        (count(&held, 0), count(&held, 1), count(&held, 2)),
        (2, 1, 0)
    );
    assert_eq!(train.len() + held.len(), 16);
    assert_eq!(
        f.split(0.2, 7).unwrap(),
        (train.clone(), held.clone()),
        "seeded"
    );
    assert_ne!(f.split(0.2, 8).unwrap().1, held);
    let d = train.load([1, 2, 2], &decode_number).unwrap();
    assert_eq!((d.len(), d.num_classes, d.chw), (13, 3, [1, 2, 2]));
    for (i, (path, label)) in train.files.iter().enumerate() {
        assert_eq!(d.labels[i], *label);
        assert_eq!(d.image(i), &decode_number(path).unwrap()[..]);
    }
    // train/ + val/ take precedence over a hold-out.
    let split_root = tmpdir("folder-tv");
    fake_folder(&split_root.join("train"), &[("a", 3), ("b", 3)]);
    fake_folder(&split_root.join("val"), &[("a", 1), ("b", 2)]);
    let (t, v) = image_folder_splits(&split_root, 0.5, 0).unwrap();
    assert_eq!((t.len(), v.len()), (6, 3));
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::remove_dir_all(&split_root).unwrap();
}

#[test]
fn bad_image_folders_are_clear_errors() {
    let e = ImageFolder::scan("/nonexistent/tessera")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a directory"), "{e}");
    let root = tmpdir("bad");
    let e = ImageFolder::scan(&root).unwrap_err().to_string();
    assert!(e.contains("no class sub-folders"), "{e}");
    std::fs::create_dir_all(root.join("empty")).unwrap();
    let e = ImageFolder::scan(&root).unwrap_err().to_string();
    assert!(e.contains("\"empty\" has no images"), "{e}");
    std::fs::remove_dir_all(root.join("empty")).unwrap();
    fake_folder(&root, &[("a", 1), ("b", 1)]);
    let f = ImageFolder::scan(&root).unwrap();
    let e = f.split(0.2, 0).unwrap_err().to_string();
    assert!(e.contains("nothing can be held out"), "{e}");
    assert!(f.split(1.5, 0).is_err());
    // Sizes are checked before anything is decoded or allocated.
    let e = f
        .load([3, 100_000, 100_000], &decode_number)
        .unwrap_err()
        .to_string();
    assert!(e.contains("GiB"), "{e}");
    // A decoding failure names the file; a wrong value count too.
    std::fs::write(root.join("a").join("000.png"), "garbage").unwrap();
    let e = f.load([1, 2, 2], &decode_number).unwrap_err().to_string();
    assert!(e.contains("000.png") && e.contains("not a number"), "{e}");
    let e = f
        .load([1, 3, 3], &|_: &Path| Ok(vec![0.0; 2]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("decoded to 2 values"), "{e}");
    // Class lists of train/ and val/ must agree.
    let tv = tmpdir("bad-tv");
    fake_folder(&tv.join("train"), &[("a", 2)]);
    fake_folder(&tv.join("val"), &[("b", 2)]);
    let e = image_folder_splits(&tv, 0.2, 0).unwrap_err().to_string();
    assert!(e.contains("different class folders"), "{e}");
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::remove_dir_all(&tv).unwrap();
}

#[test]
fn random_resized_crop_is_seeded_and_in_bounds() {
    let rc = ResizedCrop::default();
    for seed in 0..200 {
        let mut rng = Rng::new(seed);
        let (top, left, h, w) = rc.params(32, 24, &mut rng);
        assert!(h >= 1 && w >= 1 && top + h <= 32 && left + w <= 24);
        let area = (h * w) as f32 / (32.0 * 24.0);
        assert!(area <= 1.0 + 1e-6);
    }
    // The full image with ratio 1 on a square is the identity.
    let whole = ResizedCrop {
        scale: (1.0, 1.0),
        ratio: (1.0, 1.0),
    };
    let aug = Augment {
        resized_crop: Some(whole),
        ..Augment::default()
    };
    let img: Vec<f32> = (0..2 * 6 * 6).map(|v| v as f32).collect();
    let mut out = Vec::new();
    aug.apply(&img, [2, 6, 6], &mut Rng::new(3), &mut out);
    assert_eq!(out, img);
    // Default crop: the same seed, the same pixels; values stay inside the input's range
    // (bilinear interpolation never overshoots).
    let aug = Augment {
        resized_crop: Some(rc),
        hflip: true,
        ..Augment::default()
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    aug.apply(&img, [2, 6, 6], &mut Rng::new(11), &mut a);
    aug.apply(&img, [2, 6, 6], &mut Rng::new(11), &mut b);
    assert_eq!(a, b);
    assert_eq!(a.len(), img.len());
    assert!(a.iter().all(|&v| (0.0..72.0).contains(&v)));
    let mut c = Vec::new();
    aug.apply(&img, [2, 6, 6], &mut Rng::new(12), &mut c);
    assert_ne!(a, c);
}
