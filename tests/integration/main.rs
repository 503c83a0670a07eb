mod model_parity;
mod optim;
