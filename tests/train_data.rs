//! Data: the embedded digits, the fixed split, normalisation, augmentation, batches and the
//! CIFAR-10 binary reader's errors.

use tessera::models::data::{cifar10, digits, digits_split, permutation, Augment};

#[test]
fn digits_are_embedded_and_split_deterministically() {
    let d = digits();
    assert_eq!((d.len(), d.chw, d.num_classes), (1797, [1, 8, 8], 10));
    assert!(d.images.iter().all(|v| (0.0..=1.0).contains(v)));
    let mut counts = [0usize; 10];
    for &l in &d.labels {
        counts[l] += 1;
    }
    assert!(
        counts.iter().all(|&c| (174..=183).contains(&c)),
        "{counts:?}"
    );
    let (train, test) = digits_split().unwrap();
    assert_eq!((train.len(), test.len()), (1437, 360));
    let (train2, test2) = digits_split().unwrap();
    assert_eq!(train, train2);
    assert_eq!(test, test2);
    // The parts partition the set: pixel sums add up.
    let total: f64 = d.images.iter().map(|&v| v as f64).sum();
    let parts: f64 = train
        .images
        .iter()
        .chain(&test.images)
        .map(|&v| v as f64)
        .sum();
    assert!((total - parts).abs() < 1e-6 * total);
    assert!(d.split(1798, 0).is_err());
}

#[test]
fn normalisation_gives_zero_mean_unit_std() {
    let (mut train, _) = digits_split().unwrap();
    let (mean, std) = train.channel_stats();
    train.normalize(&mean, &std).unwrap();
    let (m2, s2) = train.channel_stats();
    assert!(
        m2[0].abs() < 1e-5 && (s2[0] - 1.0).abs() < 1e-4,
        "{m2:?} {s2:?}"
    );
    assert!(train.normalize(&[0.0, 0.0], &[1.0, 1.0]).is_err());
    assert!(train.normalize(&[0.0], &[0.0]).is_err());
}

#[test]
fn augmentation_and_batches() {
    let d = digits();
    let idx: Vec<usize> = (0..16).collect();
    let (x, y) = d.batch(&idx, None, 0);
    assert_eq!(x.shape(), &[16, 1, 8, 8]);
    assert_eq!(y, d.labels[..16]);
    // Flip only: every image is either unchanged or mirrored.
    let flip = Augment {
        crop_padding: 0,
        hflip: true,
        ..Augment::default()
    };
    let (xf, _) = d.batch(&idx, Some(&flip), 5);
    let xf = xf.to_vec();
    let mut flipped = 0;
    for (i, img) in xf.chunks(64).enumerate() {
        let src = d.image(i);
        let mirrored: Vec<f32> = (0..64).map(|k| src[(k / 8) * 8 + 7 - k % 8]).collect();
        assert!(img == src || img == &mirrored[..]);
        flipped += (img != src) as usize;
    }
    assert!(flipped > 0 && flipped < 16, "{flipped}");
    // Crop with padding: the same seed gives the same batch; pixel mass can only drop (zeros
    // shifted in) and the shape is kept.
    let crop = Augment {
        crop_padding: 2,
        hflip: false,
        ..Augment::default()
    };
    let (a, _) = d.batch(&idx, Some(&crop), 9);
    let (b, _) = d.batch(&idx, Some(&crop), 9);
    assert_eq!(a.to_vec(), b.to_vec());
    assert_eq!(a.shape(), &[16, 1, 8, 8]);
    let batches = d.epoch_batches(100, Some(3));
    assert_eq!(batches.len(), 18);
    assert_eq!(batches.iter().map(|b| b.len()).sum::<usize>(), 1797);
    let mut all: Vec<usize> = batches.concat();
    all.sort_unstable();
    assert_eq!(all, (0..1797).collect::<Vec<_>>());
    assert_ne!(d.epoch_batches(100, Some(3)), d.epoch_batches(100, Some(4)));
    assert_eq!(permutation(5, 1), permutation(5, 1));
}

fn tmpdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-cifar-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_batch(dir: &std::path::Path, name: &str, records: usize, label: u8) {
    let mut bytes = Vec::new();
    for r in 0..records {
        bytes.push(label);
        bytes.extend((0..3072).map(|i| ((i + r) % 256) as u8));
    }
    std::fs::write(dir.join(name), bytes).unwrap();
}

#[test]
fn cifar_reader_reads_and_names_bad_files() {
    let dir = tmpdir("ok");
    for b in 1..=5 {
        write_batch(&dir, &format!("data_batch_{b}.bin"), 3, b as u8);
    }
    write_batch(&dir, "test_batch.bin", 2, 9);
    let (train, test) = cifar10(&dir).unwrap();
    assert_eq!((train.len(), test.len(), train.chw), (15, 2, [3, 32, 32]));
    assert_eq!(train.labels[..4], [1, 1, 1, 2]);
    assert_eq!(train.image(0)[1], 1.0 / 255.0);

    let err = cifar10(tmpdir("missing")).unwrap_err().to_string();
    assert!(
        err.contains("data_batch_1.bin") && err.contains("cannot read"),
        "{err}"
    );

    let dir = tmpdir("short");
    for b in 1..=5 {
        write_batch(&dir, &format!("data_batch_{b}.bin"), 2, 0);
    }
    write_batch(&dir, "test_batch.bin", 2, 0);
    let p = dir.join("data_batch_3.bin");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.truncate(3073 + 100);
    std::fs::write(&p, bytes).unwrap();
    let err = cifar10(&dir).unwrap_err().to_string();
    assert!(
        err.contains("data_batch_3.bin") && err.contains("record 1 is truncated"),
        "{err}"
    );

    write_batch(&dir, "data_batch_3.bin", 2, 0);
    let p = dir.join("test_batch.bin");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[3073] = 12;
    std::fs::write(&p, bytes).unwrap();
    let err = cifar10(&dir).unwrap_err().to_string();
    assert!(
        err.contains("test_batch.bin") && err.contains("record 1: label 12"),
        "{err}"
    );
    assert!(cifar10(dir.join("nope"))
        .unwrap_err()
        .to_string()
        .contains("not a directory"));
}
