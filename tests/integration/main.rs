
mod export;
