mod model_parity;
mod optim;
mod train;
