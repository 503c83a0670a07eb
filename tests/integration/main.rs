mod model_parity;
