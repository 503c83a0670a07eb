//! Choosing the device: `auto`, `cpu`, `cuda` or `cuda:N`. Asking for CUDA where libtorch sees no
//! GPU is an error, never a silent CPU run.

use crate::error::{Error, Result};
use tch::{Cuda, Device};

/// Resolve a device setting: `auto`, `cpu`, `cuda` or `cuda:N`.
pub fn resolve_device(spec: &str) -> Result<Device> {
    let spec = spec.trim();
    match spec {
        "auto" => Ok(match crate::native::torch_cuda() {
            Ok(_) => Device::cuda_if_available(),
            Err(_) => Device::Cpu,
        }),
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(spec, 0),
        _ => match spec.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => cuda(spec, i),
            _ => Err(device_error(spec, "expected auto, cpu, cuda or cuda:N")),
        },
    }
}

/// CUDA device `index` (a runtime `Device::Cuda(index)`), checked as [`resolve_device`] checks it.
pub fn cuda_device(index: usize) -> Result<Device> {
    cuda(&format!("cuda:{index}"), index)
}

/// CUDA device `index`, when libtorch's CUDA part loads and sees that many GPUs.
fn cuda(spec: &str, index: usize) -> Result<Device> {
    if let Err(e) = crate::native::torch_cuda() {
        return Err(device_error(spec, format!("{e}; use the cpu device")));
    }
    if !Cuda::is_available() {
        return Err(device_error(
            spec,
            "libtorch sees no CUDA device (is a GPU visible? `cbqa doctor` shows what was \
             found); use the cpu device",
        ));
    }
    let n = Cuda::device_count() as usize;
    if index >= n {
        return Err(device_error(
            spec,
            format!("there are only {n} CUDA device(s)"),
        ));
    }
    Ok(Device::Cuda(index))
}

fn device_error(spec: &str, msg: impl Into<String>) -> Error {
    Error::Device {
        device: spec.to_string(),
        msg: msg.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_absent_cuda() {
        assert_eq!(resolve_device("cpu").unwrap(), Device::Cpu);
        assert!(resolve_device("gpu").is_err());
        assert!(resolve_device("cuda:x").is_err());
        // setup.sh installs the CUDA build of torch: its CUDA part loads (at run time, see
        // native::torch_cuda) even where there is no GPU
        let cuda = crate::native::torch_cuda().expect("libtorch_cuda.so should load");
        assert!(cuda.exists(), "{}", cuda.display());
        if !Cuda::is_available() {
            assert_eq!(resolve_device("auto").unwrap(), Device::Cpu);
            let e = resolve_device("cuda:0").unwrap_err().to_string();
            assert!(
                e.contains("CUDA") && e.contains("use the cpu device"),
                "{e}"
            );
            assert!(resolve_device("cuda").is_err());
        }
    }
}
