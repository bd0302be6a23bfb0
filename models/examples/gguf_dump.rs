//! Prints a GGUF file's metadata (arrays abbreviated) and tensor directory.

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: gguf_dump FILE"))?;
    let f = factory_models::gguf::GgufFile::open(std::path::Path::new(&path))?;
    for (k, v) in &f.metadata {
        match v.as_array() {
            Some(a) => println!("{k} = [{} items] {:?}", a.len(), &a[..a.len().min(5)]),
            None => {
                let s = format!("{v:?}");
                println!("{k} = {}", &s[..s.len().min(300)]);
            }
        }
    }
    for t in f.tensors.values() {
        println!("{} {:?} {:?} {}", t.name, t.dims, t.dtype, t.len);
    }
    Ok(())
}
