//! An image directory: `ImageSink` writes one, `ImageDir` opens and verifies one.
//!
//! The inventory is written last, so a dump that dies half way leaves no directory that
//! looks complete; it lists every other file with its size and xxh3, and is sealed by a
//! checksum of its own bytes. A dump writes into a staging directory beside the image
//! directory and puts it in place only once sealed (`staging.rs`), and every command locks
//! the directory (`dirlock.rs`).

use crate::chunks::ChunkHasher;
use crate::dirlock::DirLock;
use crate::error::{ImageError, Result};
use crate::hash::Xxh3;
use crate::header::Kind;
use crate::names;
use crate::pages::PagesWriter;
use crate::pb;
use crate::record::{RecordReader, RecordWriter};
use crate::staging::Staging;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Writes image files into a staging directory beside the image directory, remembers
/// what it wrote for the inventory, and puts the set in place when `finish` seals it.
pub struct ImageSink {
    dir: PathBuf,
    staging: Staging,
    files: Vec<pb::ImageFile>,
    /// Make the image durable before `finish` returns, even when it replaces nothing.
    sync: bool,
    /// The pages file's checksum chunk (`chunks::CHUNK_SIZE` unless told otherwise).
    chunk_size: u64,
    /// procs.img, once a per-process file was packed into it (`pack_per_process`).
    pack: Option<Pack>,
    packing: bool,
    packed: Vec<pb::ImageFile>,
}

/// procs.img being written: the per-process record files of a tree, back to back after
/// its header. Creating a file costs an inode allocation (~0.1 ms on this machine's
/// ext4, more as deleted inodes pile up: ~40% of a 100-process dump's CPU went to the
/// 400 files), appending a few KiB costs next to nothing.
struct Pack {
    out: BufWriter<File>,
    path: PathBuf,
    hash: Xxh3,
    size: u64,
}

impl Pack {
    fn append(&mut self, bytes: &[u8]) -> Result<u64> {
        let at = self.size;
        self.out
            .write_all(bytes)
            .map_err(|e| ImageError::io(&self.path, e))?;
        self.hash.update(bytes);
        self.size += bytes.len() as u64;
        Ok(at)
    }
}

/// Where a record file being written goes: a file of its own, or memory until it is
/// appended to procs.img whole.
pub enum Out {
    File(BufWriter<File>),
    Packed(Vec<u8>),
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Out::File(f) => f.write(buf),
            Out::Packed(v) => v.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Out::File(f) => f.flush(),
            Out::Packed(_) => Ok(()),
        }
    }
}

pub type FileRecords = RecordWriter<Out>;

impl ImageSink {
    /// Opens (creating it 0700 if needed) and locks the directory, and makes the staging
    /// directory next to it. Images hold process memory, so a directory, or a parent,
    /// that other users can write to is refused, and so is a directory holding anything
    /// but image files (it would be replaced). A previous image stays as it is until the
    /// new one is complete.
    pub fn create(dir: &Path) -> Result<Self> {
        Ok(ImageSink {
            dir: dir.into(),
            staging: Staging::prepare(dir)?,
            files: Vec::new(),
            sync: false,
            chunk_size: crate::chunks::CHUNK_SIZE,
            pack: None,
            packing: false,
            packed: Vec::new(),
        })
    }

    /// With `sync`, `finish` returns only once every file of the new image is on disk
    /// (`dump --sync`). Without it, that is so only when the image replaces an older one.
    pub fn with_sync(mut self, sync: bool) -> Self {
        self.sync = sync;
        self
    }

    /// The pages file's checksum chunk in `chunk_size` bytes (a multiple of the
    /// page size; None: the default), for a file read a chunk at a time as it arrives.
    pub fn with_chunk_size(mut self, chunk_size: Option<u64>) -> Self {
        if let Some(cs) = chunk_size.filter(|&c| c > 0 && c % crate::PAGE_SIZE as u64 == 0) {
            self.chunk_size = cs;
        }
        self
    }

    /// From now on, per-process record files (`Kind::per_process`) are packed into
    /// procs.img instead of being files of their own: for a tree, whose processes would
    /// otherwise cost four files each.
    pub fn pack_per_process(&mut self) {
        self.packing = true;
    }

    /// The image directory (the files are in a staging directory until `finish`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn open_file(&mut self, name: &str) -> Result<(File, PathBuf)> {
        let path = self.staging.path().join(name);
        let file = create(&path).map_err(|e| ImageError::io(&path, e))?;
        Ok((file, path))
    }

    pub fn records(&mut self, name: &str, kind: Kind) -> Result<FileRecords> {
        if self.packing && kind.per_process() {
            let path = self.staging.path().join(names::PROCS).join(name);
            return RecordWriter::new(Out::Packed(Vec::with_capacity(4096)), path, kind);
        }
        let (file, path) = self.open_file(name)?;
        RecordWriter::new(
            Out::File(BufWriter::with_capacity(64 << 10, file)),
            path,
            kind,
        )
    }

    pub fn commit_records(&mut self, name: &str, w: FileRecords) -> Result<()> {
        let (out, size, xxh3) = w.finish()?;
        let path = self.staging.path().join(name);
        match out {
            Out::File(buf) => {
                buf.into_inner()
                    .map_err(|e| ImageError::io(&path, e.into_error()))?;
                self.files.push(pb::ImageFile {
                    name: name.into(),
                    size,
                    xxh3,
                    ..Default::default()
                });
            }
            Out::Packed(bytes) => {
                let offset = self.pack()?.append(&bytes)?;
                self.packed.push(pb::ImageFile {
                    name: name.into(),
                    size,
                    xxh3,
                    pack: names::PROCS.into(),
                    offset,
                    ..Default::default()
                });
            }
        }
        Ok(())
    }

    /// procs.img, created with its header by the first file packed.
    fn pack(&mut self) -> Result<&mut Pack> {
        if self.pack.is_none() {
            let (file, path) = self.open_file(names::PROCS)?;
            let mut p = Pack {
                out: BufWriter::with_capacity(64 << 10, file),
                path,
                hash: Xxh3::new(),
                size: 0,
            };
            p.append(&crate::header::encode(Kind::Pack))?;
            self.pack = Some(p);
        }
        Ok(self.pack.as_mut().expect("made above"))
    }

    pub fn pages(&mut self, id: u32) -> Result<PagesWriter> {
        let (file, path) = self.open_file(&names::pages(id))?;
        PagesWriter::with_chunk_size(file, path, self.chunk_size)
    }

    pub fn commit_pages(&mut self, id: u32, w: PagesWriter) -> Result<()> {
        let chunk_size = w.chunk_size();
        let (_file, size, chunk_xxh3, xxh3) = w.finish()?;
        self.files.push(pb::ImageFile {
            name: names::pages(id),
            size,
            xxh3,
            chunk_size,
            chunk_xxh3,
            ..Default::default()
        });
        Ok(())
    }

    /// Writes the inventory (listing every committed file), seals it, and puts the new
    /// image in place of the directory's old content.
    pub fn finish(mut self, mut inv: pb::Inventory) -> Result<()> {
        if let Some(mut p) = self.pack.take() {
            p.out.flush().map_err(|e| ImageError::io(&p.path, e))?;
            self.files.push(pb::ImageFile {
                name: names::PROCS.into(),
                size: p.size,
                xxh3: p.hash.digest(),
                ..Default::default()
            });
        }
        inv.files = std::mem::take(&mut self.files);
        inv.packed = std::mem::take(&mut self.packed);
        inv.format_version = crate::FORMAT_VERSION as u32;
        let mut w = self.records(names::INVENTORY, Kind::Inventory)?;
        w.write(&inv)?;
        let seal = pb::InventorySeal { xxh3: w.digest() };
        w.write(&seal)?;
        let path = self.staging.path().join(names::INVENTORY);
        let (out, _, _) = w.finish()?;
        let Out::File(buf) = out else {
            unreachable!("the inventory is a file of its own")
        };
        let file = buf
            .into_inner()
            .map_err(|e| ImageError::io(&path, e.into_error()))?;
        file.sync_all().map_err(|e| ImageError::io(&path, e))?;
        self.staging.commit(self.sync)
    }
}

/// A new image file, 0600 (in the staging directory, which this dump made).
fn create(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// An image directory whose inventory has been read and sealed. It holds a shared lock on
/// the directory while it lives, so no dump replaces the files it reads (or maps).
pub struct ImageDir {
    dir: PathBuf,
    inventory: pb::Inventory,
    /// procs.img, opened by the first packed file read (each then costs one pread).
    pack: std::sync::OnceLock<File>,
    _lock: DirLock,
}

impl ImageDir {
    /// Reads and checks the inventory only (used by `show` to report on damaged sets).
    pub fn open_unverified(dir: &Path) -> Result<Self> {
        let meta = std::fs::metadata(dir).map_err(|e| ImageError::io(dir, e))?;
        if !meta.is_dir() {
            return Err(ImageError::invalid(dir, "not a directory"));
        }
        let lock = crate::dirlock::lock(dir, false)?;
        let path = dir.join(names::INVENTORY);
        if !path.exists() {
            return Err(ImageError::invalid(
                dir,
                "no inventory.img: not an image directory, or its dump did not finish",
            ));
        }
        let r = RecordReader::open(&path, Kind::Inventory)?;
        let inventory = Self::decode_inventory(r)?;
        Ok(ImageDir {
            dir: dir.into(),
            inventory,
            pack: std::sync::OnceLock::new(),
            _lock: lock,
        })
    }

    /// Decodes and checks the records of an inventory file: the Inventory, a seal that
    /// matches every byte before it, nothing after it, and only plain image file names.
    pub fn decode_inventory(mut r: RecordReader) -> Result<pb::Inventory> {
        let path = r.path().to_path_buf();
        let inventory: pb::Inventory = r.expect("Inventory")?;
        let sealed_len = r.position();
        let seal: pb::InventorySeal = r.expect("InventorySeal")?;
        if crate::hash::xxh3_64(&r.bytes()[..sealed_len]) != seal.xxh3 {
            return Err(ImageError::Checksum { path });
        }
        if !r.at_end() {
            return Err(ImageError::invalid(path, "trailing bytes after the seal"));
        }
        for f in &inventory.files {
            check_name(&path, &f.name)?;
            if !f.pack.is_empty() {
                return Err(ImageError::invalid(
                    &path,
                    format!("{} is listed as a file of its own and as packed", f.name),
                ));
            }
        }
        let pack = inventory.files.iter().find(|f| f.name == names::PROCS);
        for f in &inventory.packed {
            check_name(&path, &f.name)?;
            let fits = pack.is_some_and(|p| {
                f.offset >= crate::HEADER_LEN as u64
                    && f.offset
                        .checked_add(f.size)
                        .is_some_and(|end| end <= p.size)
            });
            let per_process = Kind::for_name(&f.name).is_some_and(Kind::per_process);
            if f.pack != names::PROCS || !fits || !per_process || f.chunk_size != 0 {
                return Err(ImageError::invalid(
                    &path,
                    format!(
                        "packed {} (in {:?} at {}, {} bytes) does not lie inside {}",
                        f.name,
                        f.pack,
                        f.offset,
                        f.size,
                        names::PROCS
                    ),
                ));
            }
        }
        Ok(inventory)
    }

    /// `open_unverified` of a directory owned by the user running ckpt, as restore needs
    /// (`show` only reads, and may look at anyone's).
    fn open_owned(dir: &Path) -> Result<Self> {
        let d = Self::open_unverified(dir)?;
        d._lock.check_owned(dir)?;
        Ok(d)
    }

    /// Opens the directory (refused unless the user running ckpt owns it) and verifies the
    /// size and checksum of every listed file.
    pub fn open(dir: &Path) -> Result<Self> {
        let d = Self::open_owned(dir)?;
        for f in &d.inventory.files {
            d.verify_file(f)?;
        }
        Ok(d)
    }

    /// Like `open`, but pages files only have their size checked: their checksum is left
    /// to the caller, who maps them and verifies their chunks on every CPU
    /// (`chunks::verify`) or chunk by chunk as it uses them (the lazy pager).
    pub fn open_deferring_pages(dir: &Path) -> Result<Self> {
        let d = Self::open_owned(dir)?;
        for f in &d.inventory.files {
            if Kind::for_name(&f.name) == Some(Kind::Pages) {
                let path = d.path(&f.name);
                let size = open_nofollow(&path)?
                    .metadata()
                    .map_err(|e| ImageError::io(&path, e))?
                    .len();
                if size != f.size {
                    return Err(ImageError::Size {
                        path,
                        found: size,
                        expected: f.size,
                    });
                }
            } else {
                d.verify_file(f)?;
            }
        }
        Ok(d)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn inventory(&self) -> &pb::Inventory {
        &self.inventory
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn entry(&self, name: &str) -> Result<&pb::ImageFile> {
        self.lookup(name)
            .ok_or_else(|| ImageError::invalid(self.path(name), "not listed in inventory.img"))
    }

    /// The inventory's entry for file `name`, a file of its own or packed.
    pub fn lookup(&self, name: &str) -> Option<&pb::ImageFile> {
        self.entries().find(|f| f.name == name)
    }

    /// Every file of the image: those of their own (procs.img included), then the packed.
    pub fn entries(&self) -> impl Iterator<Item = &pb::ImageFile> {
        self.inventory.files.iter().chain(&self.inventory.packed)
    }

    /// `entries` by name, for a caller that looks many up.
    pub fn index(&self) -> std::collections::HashMap<&str, &pb::ImageFile> {
        self.entries().map(|f| (f.name.as_str(), f)).collect()
    }

    /// The bytes of packed file `f`, read from procs.img and checked against its own
    /// size and checksum (so a pack changed after `open` is still refused).
    fn packed_bytes(&self, f: &pb::ImageFile) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let path = self.dir.join(format!("{}:{}", names::PROCS, f.name));
        if f.size > crate::record::MAX_RECORD_FILE {
            return Err(ImageError::invalid(
                &path,
                "record file larger than allowed",
            ));
        }
        let pack = match self.pack.get() {
            Some(p) => p,
            None => {
                let p = open_nofollow(&self.path(names::PROCS))?;
                self.pack.get_or_init(|| p)
            }
        };
        let mut data = vec![0u8; f.size as usize];
        let mut at = 0;
        while at < data.len() {
            match pack.read_at(&mut data[at..], f.offset + at as u64) {
                Ok(0) => {
                    return Err(ImageError::Size {
                        path,
                        found: at as u64,
                        expected: f.size,
                    })
                }
                Ok(n) => at += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ImageError::io(&path, e)),
            }
        }
        if crate::hash::xxh3_64(&data) != f.xxh3 {
            return Err(ImageError::Checksum { path });
        }
        Ok(data)
    }

    /// Streams one file through xxh3 and compares size and checksum with the inventory.
    pub fn verify_file(&self, f: &pb::ImageFile) -> Result<()> {
        if !f.pack.is_empty() {
            return self.packed_bytes(f).map(|_| ());
        }
        let path = self.path(&f.name);
        let file = open_nofollow(&path)?;
        let size = file.metadata().map_err(|e| ImageError::io(&path, e))?.len();
        if size != f.size {
            return Err(ImageError::Size {
                path,
                found: size,
                expected: f.size,
            });
        }
        let chunked = f.chunk_size != 0;
        let mut chunks = if chunked {
            Some(ChunkHasher::new(crate::chunks::check_entry(&path, f)?))
        } else {
            None
        };
        let mut hash = Xxh3::new();
        // Sized for the file (most are a few KiB): a fresh MiB zeroed per file was most
        // of what verifying a tree's hundreds of small files cost.
        let mut buf = vec![0u8; f.size.clamp(4096, 1 << 20) as usize];
        // A file growing while it is read is not read past its recorded size (+1 to notice).
        let mut file = file.take(f.size.saturating_add(1));
        let mut read = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(|e| ImageError::io(&path, e))?;
            if n == 0 {
                break;
            }
            read += n as u64;
            match &mut chunks {
                Some(c) => c.update(&buf[..n]),
                None => hash.update(&buf[..n]),
            }
        }
        if read != f.size {
            return Err(ImageError::Size {
                path,
                found: read,
                expected: f.size,
            });
        }
        let ok = match chunks {
            Some(c) => c.finish().0 == f.chunk_xxh3,
            None => hash.digest() == f.xxh3,
        };
        if !ok {
            return Err(ImageError::Checksum { path });
        }
        Ok(())
    }

    /// Reads one record file whole and checks it against the inventory again, so a file
    /// changed after `open` is still refused.
    pub fn records(&self, name: &str, kind: Kind) -> Result<RecordReader> {
        self.records_of(self.entry(name)?, kind)
    }

    /// `records` for an inventory entry the caller already looked up (`records` finds it
    /// by a linear search, which a caller reading every file of a big set avoids).
    pub fn records_of(&self, entry: &pb::ImageFile, kind: Kind) -> Result<RecordReader> {
        check_name(&self.path(names::INVENTORY), &entry.name)?;
        if !entry.pack.is_empty() {
            let path = self.dir.join(format!("{}:{}", names::PROCS, entry.name));
            return RecordReader::from_bytes(&path, self.packed_bytes(entry)?, kind);
        }
        let path = self.path(&entry.name);
        if entry.size > crate::record::MAX_RECORD_FILE {
            return Err(ImageError::invalid(
                &path,
                "record file larger than allowed",
            ));
        }
        let mut data = Vec::with_capacity(entry.size as usize);
        open_nofollow(&path)?
            .take(entry.size.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| ImageError::io(&path, e))?;
        if data.len() as u64 != entry.size {
            return Err(ImageError::Size {
                path,
                found: data.len() as u64,
                expected: entry.size,
            });
        }
        if crate::hash::xxh3_64(&data) != entry.xxh3 {
            return Err(ImageError::Checksum { path });
        }
        RecordReader::from_bytes(&path, data, kind)
    }

    /// Opens a pages file (without following symlinks) for the caller to read or map.
    pub fn open_pages(&self, id: u32) -> Result<(File, PathBuf)> {
        let name = names::pages(id);
        self.entry(&name)?;
        let path = self.path(&name);
        Ok((open_nofollow(&path)?, path))
    }
}

/// Opens an image file for reading: no symlink is followed, and anything but a regular
/// file is refused. O_NONBLOCK keeps open(2) of a FIFO planted in the directory from
/// blocking forever (it changes nothing for regular files); a device such as /dev/zero
/// would otherwise be read without end.
pub(crate) fn open_nofollow(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // O_NOFOLLOW met a symlink.
            Some(e) if e == Errno::ELOOP as i32 => {
                ImageError::invalid(path, "is a symbolic link, not an image file")
            }
            _ => ImageError::io(path, e),
        })?;
    let meta = file.metadata().map_err(|e| ImageError::io(path, e))?;
    if !meta.is_file() {
        return Err(ImageError::invalid(path, "not a regular file"));
    }
    Ok(file)
}

/// O_NONBLOCK for `OpenOptionsExt::custom_flags`.
pub(crate) const fn libc_o_nonblock() -> i32 {
    OFlag::O_NONBLOCK.bits()
}

/// Image names come from the (untrusted) inventory: plain file names only.
fn check_name(inv: &Path, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0')
        && Kind::for_name(name).is_some();
    if ok {
        Ok(())
    } else {
        Err(ImageError::invalid(
            inv,
            format!("inventory lists an invalid file name {name:?}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn write_set(dir: &Path) {
        let mut sink = ImageSink::create(dir).unwrap();
        let mut w = sink.records("core-7.img", Kind::Core).unwrap();
        w.write(&pb::ProcessCore {
            pid: 7,
            comm: "x".into(),
            ..Default::default()
        })
        .unwrap();
        sink.commit_records("core-7.img", w).unwrap();
        let mut p = sink.pages(1).unwrap();
        p.write(&[0xab; 8192]).unwrap();
        sink.commit_pages(1, p).unwrap();
        sink.finish(pb::Inventory {
            root_pid: 7,
            ..Default::default()
        })
        .unwrap();
    }

    #[test]
    fn round_trip_and_modes() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("img");
        write_set(&dir);
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(
            std::fs::metadata(dir.join("core-7.img")).unwrap().mode() & 0o777,
            0o600
        );
        let d = ImageDir::open(&dir).unwrap();
        assert_eq!(d.inventory().files.len(), 2);
        let mut r = d.records("core-7.img", Kind::Core).unwrap();
        let c: pb::ProcessCore = r.expect("ProcessCore").unwrap();
        assert_eq!(c.pid, 7);
    }

    /// A sink in `t`/img that packs the per-process files, as a tree's dump does.
    fn packing_sink(t: &tempfile::TempDir) -> (PathBuf, ImageSink) {
        let dir = t.path().join("img");
        let mut sink = ImageSink::create(&dir).unwrap();
        sink.pack_per_process();
        (dir, sink)
    }

    /// A tree's image: the per-process files packed into procs.img, read back by name
    /// like files of their own; a flipped byte in one packed file is refused naming it
    /// (when the set is opened, as procs.img's checksum, and when that file is read).
    #[test]
    fn packed_files_round_trip_and_are_checked() {
        let t = tempfile::tempdir().unwrap();
        let (dir, mut sink) = packing_sink(&t);
        for pid in [7, 8] {
            let name = names::core(pid);
            let mut w = sink.records(&name, Kind::Core).unwrap();
            w.write(&pb::ProcessCore {
                pid,
                ..Default::default()
            })
            .unwrap();
            sink.commit_records(&name, w).unwrap();
        }
        let mut w = sink.records(names::FDTABLE, Kind::FileTable).unwrap();
        w.write(&pb::FileDesc::default()).unwrap();
        sink.commit_records(names::FDTABLE, w).unwrap();
        sink.finish(pb::Inventory {
            root_pid: 7,
            ..Default::default()
        })
        .unwrap();
        let mut listed: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        listed.sort();
        assert_eq!(listed, ["fdtable.img", "inventory.img", "procs.img"]);
        let d = ImageDir::open(&dir).unwrap();
        assert_eq!(d.inventory().packed.len(), 2);
        for pid in [7, 8] {
            let mut r = d.records(&names::core(pid), Kind::Core).unwrap();
            let c: pb::ProcessCore = r.expect("ProcessCore").unwrap();
            assert_eq!(c.pid, pid);
            d.verify_file(d.lookup(&names::core(pid)).unwrap()).unwrap();
        }
        let second = d.lookup(&names::core(8)).unwrap().clone();
        drop(d);
        let pack = dir.join(names::PROCS);
        let mut bytes = std::fs::read(&pack).unwrap();
        bytes[second.offset as usize + 9] ^= 0x40;
        std::fs::write(&pack, &bytes).unwrap();
        let err = ImageDir::open(&dir).err().expect("corruption accepted");
        assert!(err.to_string().contains("procs.img"), "{err}");
        let d = ImageDir::open_unverified(&dir).unwrap();
        d.records(&names::core(7), Kind::Core).unwrap();
        let err = d.records(&names::core(8), Kind::Core).err().unwrap();
        assert!(err.to_string().contains("procs.img:core-8.img"), "{err}");
    }

    /// A packed entry must lie inside procs.img and be a per-process file.
    #[test]
    fn packed_entries_outside_the_pack_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let (dir, mut sink) = packing_sink(&t);
        let mut w = sink.records(&names::core(7), Kind::Core).unwrap();
        w.write(&pb::ProcessCore::default()).unwrap();
        sink.commit_records(&names::core(7), w).unwrap();
        sink.finish(pb::Inventory::default()).unwrap();
        let inv = ImageDir::open(&dir).unwrap().inventory().clone();
        let bad = |edit: &dyn Fn(&mut pb::Inventory)| {
            let mut inv = inv.clone();
            edit(&mut inv);
            let mut w = RecordWriter::new(Vec::new(), "inventory.img", Kind::Inventory).unwrap();
            w.write(&inv).unwrap();
            let seal = pb::InventorySeal { xxh3: w.digest() };
            w.write(&seal).unwrap();
            let (bytes, _, _) = w.finish().unwrap();
            let r = RecordReader::from_bytes(Path::new("inventory.img"), bytes, Kind::Inventory)
                .unwrap();
            ImageDir::decode_inventory(r).expect_err("accepted")
        };
        bad(&|i| i.packed[0].offset = u64::MAX - 1);
        bad(&|i| i.packed[0].size += 1);
        bad(&|i| i.packed[0].offset = 0);
        bad(&|i| i.packed[0].name = names::FDTABLE.into());
        bad(&|i| i.packed[0].pack = "pages-1.img".into());
        bad(&|i| i.files.retain(|f| f.name != names::PROCS));
        let e = bad(&|i| i.files[0].pack = names::PROCS.into());
        assert!(e.to_string().contains("as packed"), "{e}");
    }

    #[test]
    fn flipped_byte_in_any_file_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("img");
        write_set(&dir);
        for name in ["core-7.img", "pages-1.img", "inventory.img"] {
            let p = dir.join(name);
            let orig = std::fs::read(&p).unwrap();
            for at in [9usize, orig.len() - 1] {
                let mut bad = orig.clone();
                bad[at] ^= 0x40;
                std::fs::write(&p, &bad).unwrap();
                let err = ImageDir::open(&dir).err().expect("corruption accepted");
                assert!(err.to_string().contains(name), "{name}@{at}: {err}");
            }
            std::fs::write(&p, &orig).unwrap();
        }
        ImageDir::open(&dir).unwrap();
    }

    #[test]
    fn other_writable_directory_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("img");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ImageSink::create(&dir).err().unwrap();
        assert!(err.to_string().contains("writable by other users"), "{err}");
    }

    /// Regression: an inventory.img symlinked to /dev/zero was read until memory ran out,
    /// and a FIFO in place of a record file blocked open(2) forever.
    #[test]
    fn devices_fifos_and_symlinks_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("img");
        write_set(&dir);
        let inv = dir.join(names::INVENTORY);
        let saved = std::fs::read(&inv).unwrap();
        std::fs::remove_file(&inv).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &inv).unwrap();
        let err = ImageDir::open_unverified(&dir).err().unwrap();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        std::fs::remove_file(&inv).unwrap();
        std::fs::write(&inv, saved).unwrap();

        let core = dir.join("core-7.img");
        std::fs::remove_file(&core).unwrap();
        // Not the `mkfifo` command: a child spawned by this multi-threaded test process
        // holds copies of other tests' directory locks until it execs.
        nix::unistd::mkfifo(&core, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let d = ImageDir::open_unverified(&dir).unwrap();
        let err = ImageDir::open(&dir).err().unwrap();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let err = d.records("core-7.img", Kind::Core).err().unwrap();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        std::fs::remove_file(&core).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &core).unwrap();
        let err = d.records("core-7.img", Kind::Core).err().unwrap();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    /// Names in the parent of `dir`, sorted.
    fn siblings(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// A sink dropped before `finish` (a failed dump) leaves the previous image as it was
    /// and nothing beside it; a finished one replaces it whole.
    #[test]
    fn failed_redump_keeps_the_old_image_and_a_good_one_replaces_it() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("img");
        write_set(&dir);
        let before = std::fs::read(dir.join("core-7.img")).unwrap();
        {
            let mut sink = ImageSink::create(&dir).unwrap();
            let mut w = sink.records("core-8.img", Kind::Core).unwrap();
            w.write(&pb::ProcessCore::default()).unwrap();
            sink.commit_records("core-8.img", w).unwrap();
            let mut p = sink.pages(1).unwrap();
            p.write(&[0xcd; 4096]).unwrap();
        }
        assert_eq!(siblings(&dir), ["img"]);
        ImageDir::open(&dir).unwrap();
        assert_eq!(std::fs::read(dir.join("core-7.img")).unwrap(), before);

        let mut sink = ImageSink::create(&dir).unwrap();
        let mut w = sink.records("core-8.img", Kind::Core).unwrap();
        w.write(&pb::ProcessCore {
            pid: 8,
            ..Default::default()
        })
        .unwrap();
        sink.commit_records("core-8.img", w).unwrap();
        sink.finish(pb::Inventory {
            root_pid: 8,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(siblings(&dir), ["img"]);
        let d = ImageDir::open(&dir).unwrap();
        assert_eq!(d.inventory().root_pid, 8);
        assert!(!dir.join("core-7.img").exists() && !dir.join("pages-1.img").exists());
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    }

    /// A dump never replaces a directory that holds anything but image files.
    #[test]
    fn directory_with_other_files_is_not_replaced() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("img");
        write_set(&dir);
        std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
        let err = ImageSink::create(&dir).err().unwrap();
        assert!(err.to_string().contains("notes.txt"), "{err}");
        assert_eq!(siblings(&dir), ["img"]);
        ImageDir::open(&dir).unwrap();
    }

    /// Readers share the directory; a writer has it alone, and is refused at once (not
    /// made to wait) while anyone else holds it.
    #[test]
    fn dumps_and_readers_exclude_each_other() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("img");
        write_set(&dir);
        let r1 = ImageDir::open(&dir).unwrap();
        let r2 = ImageDir::open_unverified(&dir).unwrap();
        let err = ImageSink::create(&dir).err().unwrap();
        assert!(err.to_string().contains("in use by another ckpt"), "{err}");
        drop((r1, r2));
        let sink = ImageSink::create(&dir).unwrap();
        let err = ImageDir::open(&dir).err().unwrap();
        assert!(err.to_string().contains("in use by another ckpt"), "{err}");
        let err = ImageSink::create(&dir).err().unwrap();
        assert!(err.to_string().contains("in use by another ckpt"), "{err}");
        drop(sink);
        ImageDir::open(&dir).unwrap();
    }

    /// The staging directory lives in the parent, so a parent others can write to is
    /// refused too, unless it is sticky (like /tmp).
    #[test]
    fn other_writable_parent_is_refused_unless_sticky() {
        let t = tempfile::tempdir().unwrap();
        let parent = t.path().join("p");
        std::fs::create_dir(&parent).unwrap();
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ImageSink::create(&parent.join("img")).err().unwrap();
        assert!(err.to_string().contains("writable by other users"), "{err}");
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o1777)).unwrap();
        write_set(&parent.join("img"));
    }

    #[test]
    fn empty_directory_is_not_an_image() {
        let t = tempfile::tempdir().unwrap();
        let err = ImageDir::open(t.path()).err().unwrap();
        assert!(err.to_string().contains("no inventory.img"), "{err}");
    }
}
