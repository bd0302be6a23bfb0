//! Model families, loading, tokenization and the forward pass.
