//! Safe file replacement (`tessera::models::io::atomic`): what a save may and may not replace,
//! writing through symbolic links, no temporary left behind on any error path, stale
//! temporaries swept, and the pre-flight check a long job runs before it starts.

use std::io::Write;
use std::path::{Path, PathBuf};
use tessera::models::io::atomic::{self, check_writable, resolve, write_atomically, write_bytes};
use tessera::models::io::{npy, safetensors};

/// A fresh empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "tessera-reliability-writes-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Names in `dir` that look like temporaries of ours.
fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(atomic::TMP_MARKER))
        .collect()
}

#[test]
fn creates_and_replaces_regular_files() {
    let d = scratch("regular");
    let p = d.join("a.bin");
    write_bytes(&p, b"first").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"first");
    write_bytes(&p, b"second, longer").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"second, longer");
    assert!(temporaries(&d).is_empty());
}

#[cfg(unix)]
#[test]
fn keeps_the_replaced_files_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let d = scratch("perms");
    let p = d.join("private.safetensors");
    write_bytes(&p, b"x").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    write_bytes(&p, b"y").unwrap();
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[cfg(unix)]
#[test]
fn writes_through_symbolic_links_and_keeps_them() {
    let d = scratch("symlink");
    let real = d.join("real.safetensors");
    write_bytes(&real, b"old").unwrap();
    let link = d.join("link.safetensors");
    std::os::unix::fs::symlink("real.safetensors", &link).unwrap();
    // A chain of two links.
    let link2 = d.join("link2.safetensors");
    std::os::unix::fs::symlink(&link, &link2).unwrap();
    write_bytes(&link2, b"new").unwrap();
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::symlink_metadata(&link2)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&real).unwrap(), b"new");
    assert_eq!(resolve(&link2).unwrap().path, d.join("real.safetensors"));
    // A dangling link creates its destination.
    let dangling = d.join("dangling");
    std::os::unix::fs::symlink("created.bin", &dangling).unwrap();
    write_bytes(&dangling, b"made").unwrap();
    assert_eq!(std::fs::read(d.join("created.bin")).unwrap(), b"made");
    assert!(temporaries(&d).is_empty());
}

#[cfg(unix)]
#[test]
fn refuses_symbolic_link_loops() {
    let d = scratch("loop");
    std::os::unix::fs::symlink("b", d.join("a")).unwrap();
    std::os::unix::fs::symlink("a", d.join("b")).unwrap();
    let e = write_bytes(d.join("a"), b"x").unwrap_err();
    assert!(e.msg.contains("symbolic links"), "{e}");
}

#[test]
fn refuses_directories() {
    let d = scratch("dir");
    let sub = d.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let e = write_bytes(&sub, b"x").unwrap_err();
    assert!(e.msg.contains("a directory"), "{e}");
    assert!(sub.is_dir());
    assert!(temporaries(&d).is_empty());
}

#[cfg(unix)]
#[test]
fn refuses_device_nodes_and_fifos() {
    use std::os::unix::fs::FileTypeExt;
    let e = write_bytes("/dev/null", b"x").unwrap_err();
    assert!(e.msg.contains("character device"), "{e}");
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    // Through a link too.
    let d = scratch("dev");
    std::os::unix::fs::symlink("/dev/null", d.join("null")).unwrap();
    let e = check_writable(&d.join("null")).unwrap_err();
    assert!(e.msg.contains("the link points to /dev/null"), "{e}");
    // A FIFO, where mkfifo exists.
    let fifo = d.join("fifo");
    if std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success())
    {
        let e = write_bytes(&fifo, b"x").unwrap_err();
        assert!(e.msg.contains("FIFO"), "{e}");
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
    }
}

#[test]
fn a_missing_directory_is_named() {
    let d = scratch("missing");
    let p = d.join("no/such/dir/ckpt.safetensors");
    let e = check_writable(&p).unwrap_err();
    assert!(e.msg.contains("does not exist"), "{e}");
    assert!(e.msg.contains("no/such/dir"), "{e}");
    let e = safetensors::write(&p, &[], &Default::default()).unwrap_err();
    assert!(e.msg.contains("does not exist"), "{e}");
}

#[test]
fn a_failing_writer_leaves_the_old_file_and_no_temporary() {
    let d = scratch("fail");
    let p = d.join("keep.bin");
    write_bytes(&p, b"precious").unwrap();
    let e = write_atomically(&p, |w| {
        w.write_all(b"half")?;
        Err(std::io::Error::other("disk on fire"))
    })
    .unwrap_err();
    assert!(e.msg.contains("disk on fire"), "{e}");
    assert_eq!(std::fs::read(&p).unwrap(), b"precious");
    assert!(temporaries(&d).is_empty());
}

#[test]
fn a_panicking_writer_leaves_no_temporary() {
    let d = scratch("panic");
    let p = d.join("keep.bin");
    write_bytes(&p, b"precious").unwrap();
    let r = std::panic::catch_unwind(|| {
        let _ = write_atomically(&p, |w| {
            w.write_all(b"half")?;
            panic!("writer bug");
        });
    });
    assert!(r.is_err());
    assert_eq!(std::fs::read(&p).unwrap(), b"precious");
    assert!(temporaries(&d).is_empty());
}

#[test]
fn stale_temporaries_of_dead_processes_are_swept() {
    let d = scratch("stale");
    let p = d.join("ckpt.safetensors");
    // No process has pid 4000000000 (Linux pids stop at 2^22).
    let stale = d.join(".ckpt.safetensors.tessera-tmp-4000000000-0");
    std::fs::write(&stale, b"partial").unwrap();
    // One of a running process (this one) stays: it may still be written.
    let live = d.join(format!(
        ".ckpt.safetensors.tessera-tmp-{}-999999",
        std::process::id()
    ));
    std::fs::write(&live, b"in progress").unwrap();
    // A temporary of another target stays.
    let other = d.join(".other.tessera-tmp-4000000000-0");
    std::fs::write(&other, b"x").unwrap();
    npy::write_f32(&p, &[2], &[1.0, 2.0]).unwrap();
    assert!(!stale.exists());
    assert!(live.exists());
    assert!(other.exists());
    assert_eq!(npy::read(&p).unwrap().shape, vec![2]);
}

#[test]
fn check_writable_changes_nothing() {
    let d = scratch("check");
    let p = d.join("new.safetensors");
    check_writable(&p).unwrap();
    assert!(!p.exists());
    write_bytes(&p, b"v").unwrap();
    check_writable(&p).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"v");
    assert!(temporaries(&d).is_empty());
}

#[test]
fn concurrent_saves_to_one_target_never_mix() {
    let d = scratch("concurrent");
    let p = d.join("shared.bin");
    std::thread::scope(|s| {
        for t in 0..8u8 {
            let p = &p;
            s.spawn(move || {
                for _ in 0..20 {
                    write_bytes(p, &[t; 4096]).unwrap();
                }
            });
        }
    });
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(bytes.len(), 4096);
    assert!(bytes.iter().all(|&b| b == bytes[0]));
    assert!(temporaries(&d).is_empty());
}
