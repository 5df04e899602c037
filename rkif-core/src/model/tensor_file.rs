//! Files of named tensors (safetensors with header metadata) and atomic writes: a file is
//! written to a temporary name in its folder and renamed into place, so a reader (or a resumed
//! run after a crash) sees either the old file or the complete new one. Used by the adapter
//! files and the optimiser checkpoint.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};

use crate::report::write_atomic;
use crate::{Error, Result};

struct RawTensor {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl safetensors::View for &RawTensor {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Copy `t` to host bytes (candle's own safetensors writer unwraps inside; this returns errors).
fn raw_tensor(name: &str, t: &Tensor) -> Result<RawTensor> {
    let flat = t.to_device(&Device::Cpu)?.flatten_all()?.contiguous()?;
    let (storage, layout) = flat.storage_and_layout();
    let range = layout
        .contiguous_offsets()
        .ok_or_else(|| Error::tensor(name, "not contiguous after copy"))?;
    let slice_err = || Error::tensor(name, "storage shorter than its layout");
    let bytes: Vec<u8> = match &*storage {
        Storage::Cpu(CpuStorage::F32(v)) => v
            .get(range.0..range.1)
            .ok_or_else(slice_err)?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        Storage::Cpu(CpuStorage::F64(v)) => v
            .get(range.0..range.1)
            .ok_or_else(slice_err)?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        Storage::Cpu(CpuStorage::F16(v)) => v
            .get(range.0..range.1)
            .ok_or_else(slice_err)?
            .iter()
            .flat_map(|x| x.to_bits().to_le_bytes())
            .collect(),
        Storage::Cpu(CpuStorage::BF16(v)) => v
            .get(range.0..range.1)
            .ok_or_else(slice_err)?
            .iter()
            .flat_map(|x| x.to_bits().to_le_bytes())
            .collect(),
        Storage::Cpu(CpuStorage::I64(v)) => v
            .get(range.0..range.1)
            .ok_or_else(slice_err)?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        _ => {
            return Err(Error::tensor(
                name,
                format!("dtype {:?} cannot be written", t.dtype()),
            ))
        }
    };
    Ok(RawTensor {
        dtype: file_dtype(name, t.dtype())?,
        shape: t.dims().to_vec(),
        bytes,
    })
}

/// The dtypes we write and read, in the `safetensors` crate's spelling. (candle links another
/// `safetensors` version, so its conversions do not apply to ours.)
const DTYPES: [(DType, safetensors::Dtype); 5] = [
    (DType::F32, safetensors::Dtype::F32),
    (DType::F64, safetensors::Dtype::F64),
    (DType::F16, safetensors::Dtype::F16),
    (DType::BF16, safetensors::Dtype::BF16),
    (DType::I64, safetensors::Dtype::I64),
];

fn file_dtype(name: &str, dtype: DType) -> Result<safetensors::Dtype> {
    DTYPES
        .iter()
        .find_map(|&(d, f)| (d == dtype).then_some(f))
        .ok_or_else(|| Error::tensor(name, format!("dtype {dtype:?} cannot be written")))
}

fn tensor_dtype(dtype: safetensors::Dtype) -> Option<DType> {
    DTYPES.iter().find_map(|&(d, f)| (f == dtype).then_some(d))
}

/// Write `tensors` (name, tensor) with header `metadata` as one safetensors file, atomically.
pub(crate) fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let mut seen = BTreeSet::new();
    let mut raw = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        if !seen.insert(name.as_str()) {
            return Err(Error::tensor(name, "written twice to the same file"));
        }
        raw.push((name.as_str(), raw_tensor(name, t)?));
    }
    let bytes = safetensors::serialize(raw.iter().map(|(n, r)| (*n, r)), Some(metadata))
        .map_err(|e| Error::format(path, format!("cannot encode safetensors: {e}")))?;
    write_atomic(path, &bytes)
}

/// Read a safetensors file: its tensors (on `device`) and its header metadata.
pub(crate) fn read_safetensors(
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        Error::format(
            path,
            format!("not a complete safetensors file (truncated or corrupt): {e}"),
        )
    })?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::format(path, format!("unreadable safetensors header: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let mut tensors = HashMap::new();
    for (name, view) in file.iter() {
        let dtype = tensor_dtype(view.dtype()).ok_or_else(|| {
            Error::format(
                path,
                format!("tensor `{name}`: dtype {:?} is not supported", view.dtype()),
            )
        })?;
        let t = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), device)
            .map_err(|e| Error::format(path, format!("tensor `{name}`: {e}")))?;
        tensors.insert(name.to_string(), t);
    }
    Ok((tensors, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("rkif-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join("f.txt");
        write_atomic(&path, b"one")?;
        write_atomic(&path, b"two")?;
        assert_eq!(
            std::fs::read(&path).map_err(|e| Error::io(&path, e))?,
            b"two"
        );
        let names: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f.txt")]);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn tensors_and_metadata_round_trip() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("rkif-tensor-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join("t.safetensors");
        let a = Tensor::new(&[[1.5f32, -2.0], [0.25, 3.0]], &Device::Cpu)?;
        let b = Tensor::new(7i64, &Device::Cpu)?;
        let c = Tensor::new(&[0.1f64, 0.2, 0.3], &Device::Cpu)?.narrow(0, 1, 2)?;
        let meta = HashMap::from([("k".to_string(), "v".to_string())]);
        write_safetensors(
            &path,
            &[("a".into(), a.clone()), ("b".into(), b), ("c".into(), c)],
            meta.clone(),
        )?;
        let (tensors, got_meta) = read_safetensors(&path, &Device::Cpu)?;
        assert_eq!(got_meta, meta);
        assert_eq!(tensors["a"].to_vec2::<f32>()?, a.to_vec2::<f32>()?);
        assert_eq!(tensors["b"].to_scalar::<i64>()?, 7);
        assert_eq!(tensors["c"].to_vec1::<f64>()?, vec![0.2, 0.3]);

        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        std::fs::write(&path, &bytes[..bytes.len() - 1]).map_err(|e| Error::io(&path, e))?;
        let err = read_safetensors(&path, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t.safetensors") && err.contains("truncated"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
